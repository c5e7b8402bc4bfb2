//! The consumer loop every service runs: decode, apply exactly once, store the offset.
//!
//! For each message, in partition order:
//! 1. decode it (Confluent-framed Avro, writer schema from the registry);
//! 2. in one PostgreSQL transaction, record `(consumer, event_id)` in `processed_events`
//!    (a repeat is skipped), apply the handler's effect and add the events it causes to the
//!    outbox ([`apply_batch`] inside [`apply_committed`], which the benchmark's replay of the
//!    per-order writes and the services' batch tests run too);
//! 3. only after that commit, store the message's offset for the background commit.
//!
//! Delivery is at-least-once; the effect is exactly-once. A transient failure (database,
//! registry, provider down) retries the same message with backoff, never skipping it; a
//! permanent one (garbage bytes, unknown schema, invalid content) sends the message to the
//! consumer's dead-letter topic for that origin topic, and the partition moves on.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use orderflow_events::{CodecError, Event, EventCodec, Topics};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset};
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dlq;
use crate::health::Health;
use crate::metrics::{ConsumerMetrics, Outcome};
use crate::outbox::{Outbox, OutboxSignal};
use crate::trace::{self, TraceParent};

/// Why a message could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Retry later: a dependency is unavailable.
    #[error("transient: {0}")]
    Transient(String),
    /// Never going to work: dead-letter the message. `class` is a short stable name.
    #[error("{class}: {message}")]
    Permanent {
        class: &'static str,
        message: String,
    },
}

impl HandleError {
    pub fn invalid(message: impl Into<String>) -> Self {
        HandleError::Permanent {
            class: "invalid_content",
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for HandleError {
    fn from(e: sqlx::Error) -> Self {
        if orderflow_db::is_transient(&e) {
            HandleError::Transient(format!("database: {e}"))
        } else {
            HandleError::Permanent {
                class: "database_rejected",
                message: e.to_string(),
            }
        }
    }
}

impl From<CodecError> for HandleError {
    fn from(e: CodecError) -> Self {
        if e.is_transient() {
            HandleError::Transient(e.to_string())
        } else {
            HandleError::Permanent {
                class: e.class(),
                message: e.to_string(),
            }
        }
    }
}

/// Why [`apply_batch`] applied nothing: the message the failure belongs to, if it belongs to
/// one, whether it counts as an attempt at that message, and the error.
#[derive(Debug, thiserror::Error)]
#[error("{}{error}", at.map(|i| format!("message {i} of the batch: ")).unwrap_or_default())]
pub struct BatchFailure {
    /// The index in the batch of the message the failure belongs to: one that could not be
    /// decoded, or the only new message when its handler failed. `None` for a failure of the
    /// batch as a whole: the statements around the handler, the commit, or a handler failure
    /// over several messages, which the loop cannot lay at any one of them.
    pub at: Option<usize>,
    /// Whether the handler returned the error for that message alone, so that a transient
    /// one counts as an attempt at it.
    pub in_handler: bool,
    pub error: HandleError,
}

impl BatchFailure {
    /// A failure of message `at` of the batch, returned by its handler or not.
    fn of_message(at: usize, in_handler: bool, error: HandleError) -> Self {
        BatchFailure {
            at: Some(at),
            in_handler,
            error,
        }
    }

    /// A failure of the batch as a whole.
    fn of_batch(error: HandleError) -> Self {
        BatchFailure {
            at: None,
            in_handler: false,
            error,
        }
    }
}

/// What [`apply_batch`] did with one message.
#[derive(Debug)]
pub enum Applied {
    /// Its handler ran; these are the events it caused, added to the outbox.
    Processed(Vec<Event>),
    /// Its event id was recorded already (or earlier in the same batch): skipped.
    Duplicate,
}

impl Applied {
    fn outcome(&self) -> Outcome {
        match self {
            Applied::Processed(_) => Outcome::Processed,
            Applied::Duplicate => Outcome::Duplicate,
        }
    }

    /// Whether any of a batch's messages caused an event, i.e. the batch added rows to the
    /// outbox and the relay has something to publish once it commits.
    fn caused_any(batch: &[Applied]) -> bool {
        batch
            .iter()
            .any(|applied| matches!(applied, Applied::Processed(events) if !events.is_empty()))
    }
}

/// Where a message came from, for handlers and logs.
#[derive(Debug, Clone)]
pub struct MessageContext {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// How many times this message has been tried, starting at 1, whatever failed before
    /// (the database, a commit, the registry, the handler): for logs and backoff. It restarts
    /// with the process, so it is no budget for calls to an outside party; a handler that
    /// needs one counts those calls itself, where it makes them.
    pub attempt: u32,
    /// The trace context the message carries (its `traceparent` header: the span that
    /// published it), or a new trace when it carries none.
    pub trace: TraceParent,
    /// When the broker appended the message (its log timestamp), if it says.
    pub logged_at: Option<DateTime<Utc>>,
    /// For a message put back by `orderflow dlq redrive`: the dead letter it was,
    /// `<dlq topic>/<partition>/<offset>` (the `dlq.redriven.from` header).
    pub redriven_from: Option<String>,
}

impl MessageContext {
    /// The context of a message read from the log outside the consumer loop (a rebuild):
    /// its place, its broker timestamp, its trace and redrive headers, as the loop gives them.
    pub fn of_stored(message: &dlq::StoredMessage) -> Self {
        let trace = message
            .header(trace::HEADER)
            .and_then(|raw| TraceParent::parse(&raw))
            .unwrap_or_else(TraceParent::new_root);
        MessageContext {
            topic: message.topic.clone(),
            partition: message.partition,
            offset: message.offset,
            attempt: 1,
            trace,
            logged_at: message.timestamp,
            redriven_from: message.header(dlq::REDRIVEN_FROM),
        }
    }

    /// The context of attempt `attempt` at a message of `topic` that did not come from the
    /// broker (a test, the benchmark's replay of the write path): partition 0, offset 0, a new
    /// trace.
    pub fn replayed(topic: &str, attempt: u32) -> Self {
        MessageContext {
            topic: topic.to_owned(),
            partition: 0,
            offset: 0,
            attempt,
            trace: TraceParent::new_root(),
            logged_at: None,
            redriven_from: None,
        }
    }
}

/// A service's reaction to the events it consumes.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Applies `messages` inside `tx`, in order, and returns the events each caused, one list
    /// per message (written to the outbox in the same transaction). Events the service does
    /// not act on cause an empty list.
    ///
    /// The loop passes a batch's new messages (in partition order; events whose ids it
    /// recorded before are left out, unless [`Handler::records_event_ids`] is false), or a
    /// single message when it applies them one at a time, so one function serves both and
    /// a handler writes a batch with as few statements as it can: a row each in one statement
    /// (the history service's timeline), sums by row (the analytics service), the state
    /// machine run in memory over rows read once (the order service). An error for more than
    /// one message fails the batch without charging any of them an attempt; the loop then
    /// applies its messages one at a time, so a message the handler refuses is still
    /// dead-lettered alone.
    ///
    /// Rows that another instance's batches may lock too (the same SKUs, the same orders)
    /// are locked at once, in one order that does not depend on the messages (sorted by key),
    /// before anything is written: locked message by message, in arrival order, two
    /// instances could each hold what the other needs next, and PostgreSQL would break the
    /// deadlock by failing one batch, which then falls back to one message at a time. Rows
    /// only one partition's messages touch (a charge, keyed by its order) may be locked as
    /// they come.
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: &[(&Event, &MessageContext)],
    ) -> Result<Vec<Vec<Event>>, HandleError>;

    /// Whether the loop records each event id in `processed_events` and skips an id it has
    /// seen (the default), which makes any handler's effects happen once. A handler whose
    /// every write is keyed so that a repeat writes nothing is idempotent by itself and
    /// returns false: the history service keys by the message's place in the log (topic,
    /// partition, offset), so a redriven copy of an event (same id, new offset) is applied as
    /// the new message it is; the notifications service keys by (order, status) and decides
    /// itself what a redriven copy does.
    fn records_event_ids(&self) -> bool {
        true
    }
}

/// Runs one consumer group over some topics until shutdown.
pub struct ConsumerLoop<H> {
    /// Name of the consumer (e.g. `payment`): the dedup scope and part of dead-letter names.
    pub name: String,
    pub group: String,
    /// Shared with the task that measures consumer lag while a message is in flight.
    pub consumer: Arc<StreamConsumer>,
    pub producer: crate::kafka::Producer,
    pub codec: Arc<EventCodec>,
    pub pool: PgPool,
    pub topics: Topics,
    pub handler: H,
    pub health: Health,
    pub metrics: ConsumerMetrics,
    /// Wakes the outbox relay after each commit of a batch that caused events.
    pub outbox_signal: OutboxSignal,
    /// Most messages applied in one transaction (at least 1).
    pub max_batch: usize,
    /// The subscribed topics, to subscribe again when left out of the group.
    pub subscribed: Vec<String>,
}

/// How long a stopping consumer waits for librdkafka to close it (leave its group).
const CLOSE_PATIENCE: Duration = Duration::from_secs(10);

/// How often consumer lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// How long one lag measurement may wait for the broker.
const LAG_TIMEOUT: Duration = Duration::from_secs(2);

/// The dead-letter topic of `consumer` for messages from `origin`.
pub fn dead_letter_topic(origin: &str, consumer: &str) -> String {
    format!("{origin}.{consumer}{}", dlq::SUFFIX)
}

/// A consumer error after which the client is unusable, such as being fenced by a newer
/// member with the same `group.instance.id`.
fn is_fatal(error: &rdkafka::error::KafkaError) -> bool {
    matches!(
        error,
        rdkafka::error::KafkaError::MessageConsumptionFatal(_)
    ) || matches!(
        error.rdkafka_error_code(),
        Some(
            rdkafka::types::RDKafkaErrorCode::Fatal
                | rdkafka::types::RDKafkaErrorCode::FencedInstanceId
        )
    )
}

impl<H: Handler> ConsumerLoop<H> {
    /// Consumes until `shutdown`: the message in flight is finished (or, if it is stuck
    /// retrying, abandoned uncommitted), then stored offsets are committed.
    pub async fn run(self, shutdown: CancellationToken) {
        let stop_lag = CancellationToken::new();
        let lag = tokio::spawn(measure_lag(
            self.consumer.clone(),
            self.metrics.clone(),
            stop_lag.clone(),
        ));
        let membership = tokio::spawn(rejoin_when_left_out(
            self.consumer.clone(),
            self.subscribed.clone(),
            self.name.clone(),
            stop_lag.clone(),
        ));
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = self.consumer.recv() => m,
            };
            match message {
                Ok(first) => {
                    // Receiving works again after a consume error reported as degraded.
                    self.health.recovered(&self.component());
                    // Take what the client already holds, without waiting, up to a batch.
                    let mut batch = vec![first];
                    while batch.len() < self.max_batch {
                        match self.consumer.recv().now_or_never() {
                            Some(Ok(next)) => batch.push(next),
                            Some(Err(e)) => {
                                tracing::warn!(consumer = %self.name, error = %e, "consume error");
                                break;
                            }
                            None => break,
                        }
                    }
                    self.metrics.batch_taken(batch.len());
                    let done = self.process_batch(&batch, &shutdown).await;
                    // Stored only once the messages' effects are committed (or dead-lettered).
                    for message in &batch[..done] {
                        if let Err(e) = self.consumer.store_offset_from_message(message) {
                            tracing::warn!(error = %e, "cannot store offset");
                        }
                    }
                }
                Err(e) if is_fatal(&e) => {
                    // Another process joined with this instance's id and took its place
                    // (static membership): this consumer can never consume again.
                    tracing::error!(consumer = %self.name, error = %e, "consumer fenced: stopped consuming");
                    self.health.degraded(
                        &self.component(),
                        format!(
                            "fenced: another instance joined group {} with this instance's id; give every instance its own --instance-id (or leave it empty to derive one from the host and admin port) and restart this one ({e})",
                            self.group
                        ),
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!(consumer = %self.name, error = %e, "consume error");
                    self.health
                        .degraded(&self.component(), format!("broker: {e}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        stop_lag.cancel();
        let _ = lag.await;
        let _ = membership.await;
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is the common case; other errors are logged.
            tracing::debug!(consumer = %self.name, error = %e, "final commit");
        }
        tracing::info!(consumer = %self.name, "consumer stopped");
        // Dropping the last handle closes the librdkafka consumer, which blocks while it
        // leaves its group: never on an async worker (a SIGTERMed instance hung there past its
        // grace in the scale tests), and a slow close is left to finish in the background.
        // A thread of its own rather than the runtime's blocking pool: a runtime waits for its
        // blocking tasks when it shuts down, so a close that never ends (a broker that does
        // not answer the group leave) would hold the process forever. It is waited for at most
        // CLOSE_PATIENCE, which covers a close that leaves the group normally.
        let name = self.name.clone();
        let consumer = self.consumer;
        let (closed, done) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("close-{name}"))
            .spawn(move || {
                drop(consumer);
                let _ = closed.send(());
            });
        if let Err(e) = spawned {
            tracing::warn!(consumer = %name, error = %e, "cannot close the consumer in the background");
            return;
        }
        match tokio::time::timeout(CLOSE_PATIENCE, done).await {
            Ok(_) => tracing::debug!(consumer = %name, "consumer closed"),
            Err(_) => tracing::warn!(
                consumer = %name,
                patience = ?CLOSE_PATIENCE,
                "consumer close still running; left to finish in the background"
            ),
        }
    }

    fn component(&self) -> String {
        format!("consumer-{}", self.name)
    }

    /// Applies a batch in partition order and returns how many of its messages are done (all,
    /// unless shutdown interrupted a retry). The fast path applies the whole batch in one
    /// transaction, one commit for many messages; on any error it is rolled back and each
    /// message goes through [`Self::process`] alone, which owns retries and dead letters.
    async fn process_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        shutdown: &CancellationToken,
    ) -> usize {
        // The message whose first attempt the batch's failure was: a transient failure its
        // handler returned for it alone (e.g. the payment provider, for the batch's only new
        // message).
        let mut failed = None;
        if batch.len() > 1 {
            let started = Instant::now();
            match self.apply(batch, 1).await {
                Ok(outcomes) => {
                    let elapsed = started.elapsed();
                    for (message, outcome) in batch.iter().zip(outcomes) {
                        self.metrics.processed_in(elapsed);
                        self.metrics.consumed(message.topic(), outcome);
                    }
                    return batch.len();
                }
                Err(failure) => {
                    tracing::debug!(consumer = %self.name, size = batch.len(), error = %failure.error, "batch failed, applying its messages one by one");
                    let used_an_attempt =
                        failure.in_handler && matches!(failure.error, HandleError::Transient(_));
                    failed = failure.at.filter(|_| used_an_attempt);
                }
            }
        }
        for (done, message) in batch.iter().enumerate() {
            let prior_attempts = u32::from(failed == Some(done));
            if !self.process(message, shutdown, prior_attempts).await {
                return done;
            }
        }
        batch.len()
    }

    /// Applies one message until it is done (true) or shutdown interrupts its retries (false).
    async fn process(
        &self,
        message: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
        prior_attempts: u32,
    ) -> bool {
        let first_failure = Utc::now();
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let mut attempt = prior_attempts;
        loop {
            attempt += 1;
            let started = Instant::now();
            match self.apply(std::slice::from_ref(message), attempt).await {
                Ok(outcomes) => {
                    self.metrics.processed_in(started.elapsed());
                    for outcome in outcomes {
                        self.metrics.consumed(topic, outcome);
                    }
                    if attempt > 1 {
                        self.health.recovered(&self.component());
                        tracing::info!(consumer = %self.name, attempt, "recovered");
                    }
                    return true;
                }
                Err(BatchFailure {
                    error: HandleError::Transient(reason),
                    ..
                }) => {
                    let delay = orderflow_retry::backoff(
                        attempt,
                        Duration::from_millis(100),
                        Duration::from_secs(10),
                    );
                    tracing::warn!(consumer = %self.name, topic, offset, attempt, ?delay, %reason, "transient failure, retrying");
                    self.health.degraded(&self.component(), reason);
                    self.metrics.retry();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return false,
                    }
                }
                Err(BatchFailure {
                    error:
                        HandleError::Permanent {
                            class,
                            message: reason,
                        },
                    ..
                }) => {
                    tracing::error!(consumer = %self.name, topic, partition, offset, class, %reason, "dead-lettering message");
                    let published = self
                        .dead_letter(message, class, &reason, first_failure, attempt, shutdown)
                        .await;
                    if published {
                        self.metrics.dead_lettered(topic, class);
                    }
                    return published;
                }
            }
        }
    }

    /// Decodes `messages` and applies them in one transaction with [`apply_committed`]. Returns
    /// each message's outcome once committed; on failure nothing is applied, and the failure
    /// says which message it was.
    async fn apply(
        &self,
        messages: &[BorrowedMessage<'_>],
        attempt: u32,
    ) -> Result<Vec<Outcome>, BatchFailure> {
        let mut batch = Vec::with_capacity(messages.len());
        for (i, message) in messages.iter().enumerate() {
            let event = self.codec.decode(message.payload()).await;
            let event = event.map_err(|e| BatchFailure::of_message(i, false, e.into()))?;
            let ctx = MessageContext {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                attempt,
                trace: trace_of(message),
                logged_at: message
                    .timestamp()
                    .to_millis()
                    .and_then(DateTime::from_timestamp_millis),
                redriven_from: header(message, dlq::REDRIVEN_FROM),
            };
            batch.push((event, ctx));
        }
        let applied = apply_committed(
            &self.pool,
            &self.name,
            &self.topics,
            &self.handler,
            &batch,
            &self.outbox_signal,
        )
        .await?;
        Ok(applied.iter().map(Applied::outcome).collect())
    }

    /// Publishes the message, untouched, to the dead-letter topic with headers that say where
    /// it came from and why it failed. Retries until the broker acknowledges (or shutdown).
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        class: &str,
        reason: &str,
        first_failure: DateTime<Utc>,
        attempts: u32,
        shutdown: &CancellationToken,
    ) -> bool {
        let topic = dead_letter_topic(message.topic(), &self.name);
        let failure = dlq::Failure {
            origin_topic: message.topic(),
            origin_partition: message.partition(),
            origin_offset: message.offset(),
            key: message.key(),
            group: &self.group,
            class,
            reason,
            first_failure,
            attempts,
        };
        let mut retry = 0u32;
        loop {
            let mut original = OwnedHeaders::new();
            if let Some(headers) = message.headers() {
                for h in headers.iter() {
                    original = original.insert(Header {
                        key: h.key,
                        value: h.value,
                    });
                }
            }
            let headers = failure.headers(original);
            let mut record = FutureRecord::to(&topic).headers(headers);
            if let Some(k) = message.key() {
                record = record.key(k);
            }
            if let Some(p) = message.payload() {
                record = record.payload(p);
            }
            match self
                .producer
                .get()
                .send(record, Duration::from_secs(10))
                .await
            {
                Ok(_) => return true,
                Err((e, _)) => {
                    retry += 1;
                    self.producer.renew();
                    let delay = orderflow_retry::backoff(
                        retry,
                        Duration::from_millis(100),
                        Duration::from_secs(10),
                    );
                    tracing::warn!(%topic, error = %e, ?delay, "cannot publish dead letter, retrying");
                    self.health
                        .degraded(&self.component(), format!("dead-letter topic {topic}: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return false,
                    }
                }
            }
        }
    }
}

/// Applies one batch of decoded messages inside `tx`, in order, as the consumer loop does:
/// one statement records every event id as processed by `consumer` (unless the handler is
/// idempotent by itself, [`Handler::records_event_ids`]), the handler runs once for the
/// messages not seen before ([`Handler::handle`]; an id twice in `messages` counts once),
/// and one statement adds every caused event to the outbox, each with a child of its
/// message's trace. The caller commits `tx` and then, if any message caused an event, wakes
/// the relay ([`OutboxSignal::committed`]); after a failure it must roll `tx` back, as part
/// of the batch may be applied in it. [`apply_committed`] does all of that.
pub async fn apply_batch<H: Handler + ?Sized>(
    tx: &mut Transaction<'_, Postgres>,
    consumer: &str,
    topics: &Topics,
    handler: &H,
    messages: &[(Event, MessageContext)],
) -> Result<Vec<Applied>, BatchFailure> {
    let ids: Vec<&str> = messages.iter().map(|(event, _)| event.event_id()).collect();
    // Each message's event is new unless its id was recorded before (or earlier in the
    // batch); a handler that is idempotent by itself sees every message.
    let mut fresh: Vec<bool> = vec![true; messages.len()];
    if handler.records_event_ids() {
        // Inserted in id order: two transactions recording the same ids (a batch delivered
        // twice across a rebalance) wait for each other in one order instead of deadlocking.
        let mut recorded: HashSet<String> = sqlx::query_scalar(
            "INSERT INTO processed_events (consumer, event_id)
             SELECT $1, id FROM UNNEST($2::text[]) AS t(id) ORDER BY id
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(consumer)
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| BatchFailure::of_batch(e.into()))?
        .into_iter()
        .collect();
        for (fresh, id) in fresh.iter_mut().zip(&ids) {
            *fresh = recorded.remove(*id);
        }
    }
    // The new messages, and their places in the batch.
    let (places, new): (Vec<usize>, Vec<(&Event, &MessageContext)>) = messages
        .iter()
        .enumerate()
        .filter(|(i, _)| fresh[*i])
        .map(|(i, (event, ctx))| (i, (event, ctx)))
        .unzip();
    // Each new message's span: exported, it is the child of the span that published the
    // message (the header), and what the message causes is the child of this span.
    let spans: Vec<tracing::Span> = new
        .iter()
        .map(|(event, ctx)| {
            let span = tracing::info_span!("message", consumer = %consumer, trace_id = %ctx.trace.trace_id, key = %event.key(), topic = %ctx.topic, partition = ctx.partition, offset = ctx.offset);
            trace::adopt(&span, &ctx.trace);
            span
        })
        .collect();
    // The trace context of what each new message causes.
    let traces: Vec<TraceParent> = new
        .iter()
        .zip(&spans)
        .map(|((_, ctx), span)| TraceParent::of_span(span).unwrap_or_else(|| ctx.trace.child()))
        .collect();
    let caused_by_new = match places.as_slice() {
        [] => Vec::new(),
        // One alone: a failure is that message's, and counts as an attempt at it.
        [i] => handler
            .handle(tx, &new)
            .instrument(spans[0].clone())
            .await
            .map_err(|e| BatchFailure::of_message(*i, true, e))?,
        // A failure of the whole batch, not of one message: none is charged an attempt.
        _ => handler
            .handle(tx, &new)
            .await
            .map_err(BatchFailure::of_batch)?,
    };
    assert_eq!(caused_by_new.len(), new.len(), "one result per new message");
    let mut caused_by_new = caused_by_new.into_iter();
    let applied: Vec<Applied> = messages
        .iter()
        .zip(&fresh)
        .map(|((event, _), fresh)| {
            if *fresh {
                Applied::Processed(caused_by_new.next().expect("one result per new message"))
            } else {
                tracing::debug!(consumer = %consumer, event_id = %event.event_id(), "duplicate event skipped");
                Applied::Duplicate
            }
        })
        .collect();
    let caused: Vec<(&[Event], &TraceParent)> = applied
        .iter()
        .filter_map(|applied| match applied {
            Applied::Processed(events) => Some(events.as_slice()),
            Applied::Duplicate => None,
        })
        .zip(&traces)
        .collect();
    Outbox::insert_caused(tx, topics, &caused)
        .await
        .map_err(|e| BatchFailure::of_batch(e.into()))?;
    Ok(applied)
}

/// Applies `messages` with [`apply_batch`] in a transaction of its own, as the consumer loop
/// applies each poll's messages: commits it and then, if any message caused an event, wakes
/// the relay with `signal`. After a failure it rolls the transaction back, so nothing of the
/// batch stays, and returns the failure.
pub async fn apply_committed<H: Handler + ?Sized>(
    pool: &PgPool,
    consumer: &str,
    topics: &Topics,
    handler: &H,
    messages: &[(Event, MessageContext)],
    signal: &OutboxSignal,
) -> Result<Vec<Applied>, BatchFailure> {
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| BatchFailure::of_batch(e.into()))?;
    let applied = match apply_batch(&mut tx, consumer, topics, handler, messages).await {
        Ok(applied) => applied,
        Err(failure) => {
            // The failure is what the caller needs. A rollback that fails too (the connection
            // is gone) has nothing left to undo: the server ends the transaction with it.
            let _ = tx.rollback().await;
            return Err(failure);
        }
    };
    tx.commit()
        .await
        .map_err(|e| BatchFailure::of_batch(e.into()))?;
    // Only a batch that added to the outbox wakes the relay: woken for nothing, it would
    // spend a transaction finding the outbox empty, once per batch of every consumer that
    // causes no events (history, analytics, notifications).
    if Applied::caused_any(&applied) {
        signal.committed();
    }
    Ok(applied)
}

/// How long a consumer may hold no partition while its input waits before it joins its
/// group again.
const STUCK_AFTER: Duration = Duration::from_secs(30);

/// Joins the group again when this consumer is left out of it. A broker restart that
/// interrupts a consumer's first join can leave it with no partition for as long as the
/// broker keeps the group "rebalancing" (seen with tansu: minutes, while the service's input
/// waited). When this consumer has held no partition for [`STUCK_AFTER`] and its topics have
/// data beyond the group's committed offsets (or the group does not answer), it unsubscribes
/// and subscribes again, which starts a fresh join. A consumer that holds any partition, or
/// whose group keeps up, is left alone.
async fn rejoin_when_left_out(
    consumer: Arc<StreamConsumer>,
    topics: Vec<String>,
    name: String,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(LAG_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut left_out_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let (probe, names) = (consumer.clone(), topics.clone());
        let left_out = tokio::task::spawn_blocking(move || left_out_with_work(&probe, &names))
            .await
            .unwrap_or(false);
        if !left_out {
            left_out_since = None;
            continue;
        }
        let since = *left_out_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= STUCK_AFTER {
            tracing::warn!(consumer = %name, waited = ?since.elapsed(), "no partition assigned while input waits: joining the group again");
            consumer.unsubscribe();
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            if let Err(e) = consumer.subscribe(&names) {
                tracing::warn!(consumer = %name, error = %e, "cannot subscribe again");
            }
            left_out_since = None;
        }
    }
}

/// True when this consumer holds no partition and some partition of `topics` has data beyond
/// the group's committed offset (or the group's offsets cannot be read).
fn left_out_with_work(consumer: &StreamConsumer, topics: &[String]) -> bool {
    if !consumer.assignment().is_ok_and(|a| a.count() == 0) {
        return false;
    }
    let mut all = rdkafka::TopicPartitionList::new();
    for topic in topics {
        let Ok(metadata) = consumer.fetch_metadata(Some(topic), LAG_TIMEOUT) else {
            return false;
        };
        for t in metadata.topics() {
            for p in t.partitions() {
                all.add_partition(t.name(), p.id());
            }
        }
    }
    let Ok(committed) = consumer.committed_offsets(all, LAG_TIMEOUT) else {
        // A group stuck mid-rebalance does not answer offset requests.
        return true;
    };
    committed.elements().iter().any(|e| {
        consumer
            .fetch_watermarks(e.topic(), e.partition(), LAG_TIMEOUT)
            .is_ok_and(|(low, high)| {
                let at = match e.offset() {
                    Offset::Offset(n) => n,
                    _ => low,
                };
                at < high
            })
    })
}

/// Measures the lag of every assigned partition every [`LAG_INTERVAL`] until `stop`. It runs
/// beside the loop, so the lag keeps growing while a message is stuck retrying.
async fn measure_lag(
    consumer: Arc<StreamConsumer>,
    metrics: ConsumerMetrics,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(LAG_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut assigned = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        // Watermarks are a broker round trip in a blocking call.
        let consumer = consumer.clone();
        let stop_measuring = stop.clone();
        match tokio::task::spawn_blocking(move || partition_lags(&consumer, &stop_measuring)).await
        {
            // Stopped midway: the list may be partial, and nobody reads it any more.
            _ if stop.is_cancelled() => return,
            Ok(Ok(lags)) => metrics.set_lag(&lags, &mut assigned),
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot measure consumer lag"),
            Err(e) => tracing::warn!(error = %e, "consumer lag task failed"),
        }
    }
}

/// `(topic, partition, high watermark − position)` of each assigned partition. A partition
/// that has not handed out a message since it was assigned has no position yet: its
/// committed offset stands in, or its low watermark when nothing was ever committed
/// (`auto.offset.reset=earliest`).
fn partition_lags(
    consumer: &StreamConsumer,
    stop: &CancellationToken,
) -> Result<Vec<(String, i32, i64)>, rdkafka::error::KafkaError> {
    let positions = consumer.position()?;
    let committed = if positions
        .elements()
        .iter()
        .any(|p| !matches!(p.offset(), Offset::Offset(_)))
    {
        Some(consumer.committed(LAG_TIMEOUT)?)
    } else {
        None
    };
    let mut lags = Vec::with_capacity(positions.count());
    for p in positions.elements() {
        if stop.is_cancelled() {
            break;
        }
        let (low, high) = consumer.fetch_watermarks(p.topic(), p.partition(), LAG_TIMEOUT)?;
        let position = match p.offset() {
            Offset::Offset(position) => position,
            _ => match committed
                .as_ref()
                .and_then(|c| c.find_partition(p.topic(), p.partition()))
                .map(|c| c.offset())
            {
                Some(Offset::Offset(position)) => position,
                _ => low,
            },
        };
        lags.push((
            p.topic().to_owned(),
            p.partition(),
            (high - position).max(0),
        ));
    }
    Ok(lags)
}

/// The message's trace context, or a new trace when it carries none.
fn trace_of(message: &BorrowedMessage<'_>) -> TraceParent {
    header(message, trace::HEADER)
        .and_then(|h| TraceParent::parse(&h))
        .unwrap_or_else(TraceParent::new_root)
}

fn header(message: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_events::FixedResolver;

    /// What the loop does with a message it cannot decode: dead-letter it under the codec's
    /// class, or retry it while the registry is down.
    #[tokio::test]
    async fn undecodable_messages_are_dead_lettered_and_registry_outages_retried() {
        let codec = EventCodec::with_resolver(FixedResolver::new());
        let unknown_id: &'static [u8] = &[0, 0, 0, 0x10, 0x92, 2, 0];
        let permanent = |bytes: &'static [u8]| {
            let codec = &codec;
            async move {
                match HandleError::from(codec.decode(Some(bytes)).await.unwrap_err()) {
                    HandleError::Permanent { class, .. } => class,
                    other => panic!("expected a dead letter, got {other:?}"),
                }
            }
        };
        assert_eq!(permanent(unknown_id).await, "unknown_schema");
        assert_eq!(permanent(b"{\"json\":1}").await, "not_framed");
        assert!(matches!(
            HandleError::from(CodecError::RegistryUnavailable("connection refused".into())),
            HandleError::Transient(_)
        ));
    }

    /// The relay is woken after a batch that caused events, and only then.
    #[test]
    fn only_a_batch_that_caused_events_has_anything_for_the_relay() {
        use orderflow_events::{OrderStatus, OrderStatusChanged};
        let caused = Event::OrderStatusChanged(OrderStatusChanged {
            event_id: "e1".into(),
            order_id: "00000000-0000-4000-8000-000000000001".into(),
            occurred_at: 1,
            customer_id: "customer".into(),
            version: 2,
            status: OrderStatus::Paid,
            reason: None,
        });
        let nothing = || Applied::Processed(Vec::new());
        assert!(!Applied::caused_any(&[]));
        assert!(!Applied::caused_any(&[
            nothing(),
            Applied::Duplicate,
            nothing()
        ]));
        assert!(Applied::caused_any(&[
            nothing(),
            Applied::Duplicate,
            Applied::Processed(vec![caused]),
        ]));
    }
}
