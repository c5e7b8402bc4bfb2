//! Reads the `order-status` topic from its end and hands every change to the hub. The
//! gateway needs no consumer group or offsets: a watcher first reads the order's history
//! from the order service, so the feed only has to carry what happens next.

use std::sync::Arc;
use std::time::Duration;

use orderflow_events::{Event, EventCodec};
use orderflow_platform::KafkaArgs;
use orderflow_platform::health::Health;
use orderflow_proto::v1 as pb;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

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
/// nothing.
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

/// Runs until `shutdown`, publishing each decoded status change to `hub`.
pub async fn run(
    kafka: KafkaArgs,
    codec: Arc<EventCodec>,
    hub: Arc<Hub>,
    health: Health,
    shutdown: CancellationToken,
) {
    let topic = kafka.topics().order_status;
    let client_id = format!("gateway-feed-{}", uuid::Uuid::new_v4().simple());
    // Not ready until positioned: a watcher served before that could miss a change.
    health.degraded("status-feed", "starting");
    let consumer = loop {
        let attempt = orderflow_platform::kafka::plain_consumer(&kafka, &client_id)
            .map_err(anyhow::Error::from)
            .and_then(|c| assign_from_end(&c, &topic).map(|n| (c, n)));
        match attempt {
            Ok((consumer, partitions)) => {
                tracing::info!(%topic, partitions, "status feed started");
                health.recovered("status-feed");
                break consumer;
            }
            Err(e) => {
                health.degraded("status-feed", e.to_string());
                tracing::warn!(error = %e, "status feed cannot start, retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = consumer.recv() => m,
        };
        match message {
            Ok(m) => match codec.decode(m.payload()).await {
                Ok(Event::OrderStatusChanged(e)) => hub.publish(to_update(&e)),
                Ok(other) => {
                    tracing::warn!(kind = ?other.kind(), "unexpected event on the status topic")
                }
                Err(e) => {
                    tracing::warn!(error = %e, offset = m.offset(), "undecodable status event skipped")
                }
            },
            Err(e) => {
                // librdkafka reconnects by itself; the error is informational.
                tracing::warn!(error = %e, "status feed error");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
