//! Records each event of the event topics in the timeline, keyed by its place in the log; a
//! batch's rows in one statement.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orderflow_events::Event;
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Transaction};

use crate::store::{self, Entry};
use crate::story;

/// The history service's reaction to an event: one timeline row, nothing published.
pub struct HistoryHandler;

/// The timeline row of `event`, consumed at `ctx`.
pub fn entry(event: &Event, ctx: &MessageContext) -> Result<Entry, HandleError> {
    let Some(order_id) = event.order_id() else {
        return Err(HandleError::invalid(format!(
            "{} belongs to no order",
            event.kind().full_name()
        )));
    };
    let order_id = order_id
        .parse()
        .map_err(|_| HandleError::invalid(format!("order_id {order_id:?} is not a UUID")))?;
    let kind = event.kind();
    Ok(Entry {
        topic: ctx.topic.clone(),
        partition: ctx.partition,
        offset: ctx.offset,
        order_id,
        event_type: story::event_type(kind).to_owned(),
        event_id: Some(event.event_id().to_owned()),
        producer: story::producer(kind).to_owned(),
        summary: story::summary(event),
        occurred_at: when(event, ctx),
        logged_at: ctx.logged_at,
        trace_id: Some(ctx.trace.trace_id.clone()),
        redriven_from: ctx.redriven_from.clone(),
    })
}

/// Where the entry stands in the story: the event's own time, except for a redriven copy,
/// which happened when the redrive put it back (the broker's log time).
fn when(event: &Event, ctx: &MessageContext) -> DateTime<Utc> {
    let own = DateTime::from_timestamp_millis(event.occurred_at());
    let at = match ctx.redriven_from {
        Some(_) => ctx.logged_at.or(own),
        None => own.or(ctx.logged_at),
    };
    at.unwrap_or_else(Utc::now)
}

#[async_trait]
impl Handler for HistoryHandler {
    /// The messages' rows in one statement. A message that makes no row (one that belongs
    /// to no order) fails them all, and the loop dead-letters it alone.
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: &[(&Event, &MessageContext)],
    ) -> Result<Vec<Vec<Event>>, HandleError> {
        let entries = messages
            .iter()
            .map(|(event, ctx)| entry(event, ctx))
            .collect::<Result<Vec<Entry>, HandleError>>()?;
        store::record_all(&mut **tx, &entries).await?;
        Ok(vec![Vec::new(); messages.len()])
    }

    /// Every row is keyed by (topic, partition, offset): a redelivery writes nothing, and a
    /// redriven event is recorded again where it was put back, as the timeline should show.
    fn records_event_ids(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_events::{Money, PaymentProcessed, PaymentStatus};

    fn paid(occurred_at: i64) -> Event {
        Event::PaymentProcessed(PaymentProcessed {
            event_id: "e".into(),
            order_id: uuid::Uuid::nil().to_string(),
            occurred_at,
            payment_id: "p".into(),
            status: PaymentStatus::Paid,
            amount: Money {
                amount_minor: 100,
                currency: "EUR".into(),
            },
            items: vec![],
            failure_reason: None,
            provider_reference: None,
        })
    }

    #[test]
    fn an_event_stands_at_its_own_time_and_a_redriven_copy_where_it_was_put_back() {
        let mut ctx = MessageContext::replayed("payments", 1);
        ctx.logged_at = DateTime::from_timestamp_millis(9_000);
        let entry = entry(&paid(1_000), &ctx).unwrap();
        assert_eq!(entry.occurred_at.timestamp_millis(), 1_000);
        assert_eq!(entry.producer, "payment");
        assert_eq!(entry.summary, "PAID 1.00 EUR");

        ctx.redriven_from = Some("payments.order.dlq/0/3".into());
        let copy = super::entry(&paid(1_000), &ctx).unwrap();
        assert_eq!(copy.occurred_at.timestamp_millis(), 9_000);
        assert_eq!(
            copy.redriven_from.as_deref(),
            Some("payments.order.dlq/0/3")
        );
    }

    #[test]
    fn an_event_whose_order_id_is_no_uuid_is_refused_by_name() {
        let Event::PaymentProcessed(mut e) = paid(0) else {
            unreachable!()
        };
        e.order_id = "nope".into();
        let refused = entry(
            &Event::PaymentProcessed(e),
            &MessageContext::replayed("p", 1),
        );
        assert!(
            matches!(refused, Err(HandleError::Permanent { ref message, .. }) if message.contains("\"nope\""))
        );
    }
}
