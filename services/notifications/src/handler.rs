//! Turns each status change into a recorded notification. Idempotent by itself, keyed by
//! (order, status) rather than by event id: a redelivery records nothing, and a status
//! change redriven from this service's dead letters puts its notification back to be
//! delivered again.

use async_trait::async_trait;
use orderflow_events::Event;
use orderflow_platform::consumer::dead_letter_topic;
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Transaction};

use crate::notification::{NotNotified, Notification};
use crate::{SERVICE, store};

/// The notifications service's reaction to an event: a notification to deliver, or nothing.
pub struct NotificationsHandler;

/// Whether `ctx`'s message was put back from this service's own dead letters (its
/// `redriven_from` is `<our dead-letter topic>/<partition>/<offset>`). Asked of every message,
/// so the topic's name is made only for one that was redriven at all.
fn redriven_from_here(ctx: &MessageContext) -> bool {
    ctx.redriven_from.as_deref().is_some_and(|from| {
        from.strip_prefix(dead_letter_topic(&ctx.topic, SERVICE).as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// What `event` (consumed at `ctx`) has recorded: its notification, if it is a status change
/// a customer is told of.
fn to_record<'a>(
    event: &Event,
    ctx: &'a MessageContext,
) -> Result<Option<store::ToRecord<'a>>, HandleError> {
    let Event::OrderStatusChanged(change) = event else {
        return Ok(None);
    };
    let notification = match Notification::of(change) {
        Ok(n) => n,
        Err(NotNotified::UnknownStatus) => {
            tracing::warn!(order_id = %change.order_id, version = change.version, "status unknown to this version: not notified");
            return Ok(None);
        }
        Err(NotNotified::Invalid(reason)) => return Err(HandleError::invalid(reason)),
    };
    Ok(Some(store::ToRecord {
        notification,
        event: serde_json::to_value(change).expect("an event serializes"),
        origin: store::Origin {
            topic: &ctx.topic,
            partition: ctx.partition,
            offset: ctx.offset,
            traceparent: ctx.trace.header(),
        },
    }))
}

/// Records `event`'s notification, if it has one; one redriven from this service's dead
/// letters whose notification is recorded already is put back to be delivered again.
async fn record_one(
    tx: &mut Transaction<'_, Postgres>,
    event: &Event,
    ctx: &MessageContext,
) -> Result<(), HandleError> {
    let Some(record) = to_record(event, ctx)? else {
        return Ok(());
    };
    let recorded = store::record(tx, std::slice::from_ref(&record)).await? == 1;
    if !recorded && redriven_from_here(ctx) {
        let n = &record.notification;
        let revived = store::revive(tx, n.order_id, n.status).await?;
        tracing::info!(order_id = %n.order_id, status = n.status, revived, "redriven status change");
    }
    Ok(())
}

#[async_trait]
impl Handler for NotificationsHandler {
    /// The messages' notifications in one statement, unless one of them was redriven from
    /// this service's dead letters (which may revive a notification): then one at a time. A
    /// message that is no valid status change fails them all, and the loop dead-letters it
    /// alone.
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: &[(&Event, &MessageContext)],
    ) -> Result<Vec<Vec<Event>>, HandleError> {
        if messages.iter().any(|(_, ctx)| redriven_from_here(ctx)) {
            for (event, ctx) in messages {
                record_one(tx, event, ctx).await?;
            }
        } else {
            let mut records = Vec::with_capacity(messages.len());
            for (event, ctx) in messages {
                records.extend(to_record(event, ctx)?);
            }
            if !records.is_empty() {
                store::record(tx, &records).await?;
            }
        }
        Ok(vec![Vec::new(); messages.len()])
    }

    /// Keyed by (order, status): see the module's documentation.
    fn records_event_ids(&self) -> bool {
        false
    }
}
