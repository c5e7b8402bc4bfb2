//! Reads the `order-status` topic from its end and hands every change to the hub. The
//! gateway needs no consumer group or offsets: a watcher first reads the order's history
//! from the order service, so the feed only has to carry what happens next. That holds only
//! while the feed misses nothing after it is positioned, so it:
//!
//! - reports itself ready (and WatchOrder is served) only once positioned;
//! - retries an event it cannot decode while the registry is unavailable, rather than skip
//!   it (a skipped terminal change would leave its watchers waiting forever);
//! - after skipping an event that will never decode, or repositioning (its offset went out of
//!   range), tells the watchers that may have missed a change to read their history again.

use std::sync::Arc;
use std::time::Duration;

use orderflow_events::{Event, EventCodec};
use orderflow_platform::KafkaArgs;
use orderflow_platform::health::Health;
use orderflow_proto::v1 as pb;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// The component name the feed reports its health under.
const COMPONENT: &str = "status-feed";

pub fn to_update(e: &orderflow_events::OrderStatusChanged) -> pb::OrderUpdate {
    // A status this build does not know (a newer schema's) is UNSPECIFIED to clients.
    let status = orderflow_domain::OrderStatus::try_from(e.status)
        .map_or(pb::OrderStatus::Unspecified, pb::OrderStatus::from);
    pb::OrderUpdate {
        order_id: e.order_id.clone(),
        version: e.version,
        status: status as i32,
        reason: e.reason.clone().unwrap_or_default(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: e.occurred_at.div_euclid(1000),
            nanos: (e.occurred_at.rem_euclid(1000) * 1_000_000) as i32,
        }),
        order: None,
    }
}

/// Assigns every partition of `topic` at its current end. The end offsets are read now (high
/// watermarks) rather than resolved lazily at the first fetch, so every change produced after
/// this returns reaches the hub: a watcher that subscribed and then read the history misses
/// nothing. Blocking (librdkafka round trips): run it off the async workers.
fn assign_from_end(consumer: &StreamConsumer, topic: &str) -> anyhow::Result<usize> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    anyhow::ensure!(partitions > 0, "topic {topic} has no partitions");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        list.add_partition_offset(topic, p, Offset::Offset(high))?;
    }
    consumer.assign(&list)?;
    Ok(partitions)
}

/// A consumer of `topic` assigned at its end: the topic is created first if absent (the
/// gateway may start before the broker has it).
async fn position(
    kafka: &KafkaArgs,
    topic: &str,
    client_id: &str,
) -> anyhow::Result<StreamConsumer> {
    orderflow_platform::kafka::ensure_topics(kafka, &[topic.to_owned()]).await?;
    let consumer = orderflow_platform::kafka::plain_config(kafka, client_id)
        // An offset out of range (the log truncated or lost under it) is reported to the
        // loop, which repositions and resynchronises the watchers, rather than silently
        // jumping to one end.
        .set("auto.offset.reset", "error")
        .create::<StreamConsumer>()?;
    let topic = topic.to_owned();
    let (consumer, partitions) = tokio::task::spawn_blocking(move || {
        assign_from_end(&consumer, &topic).map(|partitions| (consumer, partitions))
    })
    .await??;
    tracing::info!(partitions, "status feed positioned at the end of the topic");
    Ok(consumer)
}

/// Runs until `shutdown`, publishing each decoded status change to `hub`. `ready` turns true
/// once the feed is first positioned: WatchOrder is refused before that.
/// Marks the gateway not ready until the feed is positioned. Called before the feed's task
/// is spawned: the admin endpoint may answer before that task first runs, and must not report
/// a gateway ready whose watches could miss a change.
pub fn not_ready_yet(health: &Health) {
    health.degraded(COMPONENT, "starting");
}

pub async fn run(
    kafka: KafkaArgs,
    codec: Arc<EventCodec>,
    hub: Arc<Hub>,
    health: Health,
    ready: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let topic = kafka.topics().order_status;
    let client_id = format!("gateway-feed-{}", uuid::Uuid::new_v4().simple());
    // Not ready until positioned: a watcher served before that could miss a change.
    not_ready_yet(&health);
    let mut failures = 0;
    loop {
        let positioned = tokio::select! {
            _ = shutdown.cancelled() => return,
            positioned = position(&kafka, &topic, &client_id) => positioned,
        };
        let consumer = match positioned {
            Ok(consumer) => consumer,
            Err(e) => {
                failures += 1;
                health.degraded(COMPONENT, format!("cannot position on {topic}: {e}"));
                tracing::warn!(error = %e, attempt = failures, "status feed cannot start, retrying");
                let delay = orderflow_retry::backoff(
                    failures,
                    Duration::from_millis(200),
                    Duration::from_secs(2),
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        failures = 0;
        if *ready.borrow() {
            // Repositioned: whatever came between the old position and the new end was not
            // read, so every watcher reads its order's history again.
            let orders = hub.resync_all();
            tracing::info!(
                orders,
                "status feed repositioned; watchers read their history again"
            );
        }
        ready.send_replace(true);
        health.recovered(COMPONENT);
        if !follow(&consumer, &codec, &hub, &health, &shutdown).await {
            return;
        }
    }
}

/// Hands the consumer's messages to the hub until `shutdown` (false) or until the feed must
/// be positioned again (true).
async fn follow(
    consumer: &StreamConsumer,
    codec: &EventCodec,
    hub: &Hub,
    health: &Health,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return false,
            m = consumer.recv() => m,
        };
        match message {
            Ok(m) => {
                if !deliver(&m, codec, hub, health, shutdown).await {
                    return false;
                }
            }
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => {
                tracing::warn!("status feed offset out of range; positioning again at the end");
                return true;
            }
            Err(e) => {
                // librdkafka reconnects by itself; the error is informational.
                tracing::warn!(error = %e, "status feed error");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}

/// Decodes one message and publishes it, retrying while the registry is unavailable (the
/// feed waits rather than lose the change); false if `shutdown` came first. An event that
/// will never decode is skipped, and its order's watchers read their history instead.
async fn deliver(
    m: &BorrowedMessage<'_>,
    codec: &EventCodec,
    hub: &Hub,
    health: &Health,
    shutdown: &CancellationToken,
) -> bool {
    let mut attempts = 0;
    loop {
        match codec.decode(m.payload()).await {
            Ok(Event::OrderStatusChanged(e)) => {
                if attempts > 0 {
                    health.recovered(COMPONENT);
                    tracing::info!(
                        offset = m.offset(),
                        attempts,
                        "status event decoded after retries"
                    );
                }
                hub.publish(to_update(&e));
                return true;
            }
            Ok(other) => {
                tracing::warn!(kind = ?other.kind(), offset = m.offset(), "unexpected event on the status topic skipped");
                resync_after_skip(m, hub);
                return true;
            }
            Err(e) if e.is_transient() => {
                attempts += 1;
                health.degraded(
                    COMPONENT,
                    format!(
                        "cannot decode the status event at offset {}: {e}",
                        m.offset()
                    ),
                );
                let delay = orderflow_retry::backoff(
                    attempts,
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                );
                tracing::warn!(error = %e, offset = m.offset(), attempts, ?delay, "status event not decoded yet, retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => {
                if attempts > 0 {
                    health.recovered(COMPONENT);
                }
                tracing::warn!(error = %e, offset = m.offset(), "undecodable status event skipped");
                resync_after_skip(m, hub);
                return true;
            }
        }
    }
}

/// A skipped event may have been an order's last change. Status events are keyed by order
/// id, so that order's watchers read their history again; without a usable key, everyone's.
fn resync_after_skip(m: &BorrowedMessage<'_>, hub: &Hub) {
    match m.key().and_then(|key| std::str::from_utf8(key).ok()) {
        Some(order_id) if !order_id.is_empty() => hub.resync(order_id),
        _ => {
            hub.resync_all();
        }
    }
}
