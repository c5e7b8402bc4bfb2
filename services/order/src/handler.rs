//! The order service's reaction to payment and inventory outcomes: each event becomes an
//! [`OrderOutcome`], which the store applies through the state machine (a batch's outcomes
//! together). Catalogue and customer directory entries update the read models PlaceOrder is
//! judged against.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orderflow_domain::{
    CatalogueEntry, CustomerEntry, OrderId, OrderOutcome, PaymentOutcome, StockSettlement,
    ValidationError,
};
use orderflow_events::Event;
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Transaction};

use crate::error::OrderError;
use crate::metrics::TransitionMetrics;
use crate::store;

/// Applies payment and inventory outcomes through the state machine, and keeps the read
/// models of the catalogue and the customer directory.
pub struct OrderHandler {
    pub transitions: TransitionMetrics,
}

/// What an event asks of this service.
enum Work {
    /// An outcome for one of its orders, applied through the state machine.
    Outcome(OrderOutcome),
    /// A catalogue entry, for the read model PlaceOrder is judged against.
    Catalogue(CatalogueEntry),
    /// A customer directory entry, with when it was published and its event id, which order
    /// entries of the same customer.
    Customer {
        entry: CustomerEntry,
        occurred_at: DateTime<Utc>,
        event_id: uuid::Uuid,
    },
    /// Nothing: events this service publishes itself.
    Nothing,
}

fn work_of(event: &Event) -> Result<Work, OrderError> {
    Ok(match event {
        Event::PaymentProcessed(payment) => {
            Work::Outcome(PaymentOutcome::try_from(payment)?.into())
        }
        Event::InventoryUpdated(update) => {
            Work::Outcome(OrderOutcome::try_from(StockSettlement::try_from(update)?)?)
        }
        Event::PaymentRefunded(refund) => Work::Outcome(OrderOutcome::try_from(refund)?),
        Event::CatalogueItemChanged(entry) => Work::Catalogue(CatalogueEntry::try_from(entry)?),
        Event::CustomerStatusChanged(event) => Work::Customer {
            entry: CustomerEntry::try_from(event)?,
            occurred_at: DateTime::from_timestamp_millis(event.occurred_at).ok_or_else(|| {
                ValidationError::new(
                    "occurred_at",
                    format!("{} is not a time", event.occurred_at),
                )
            })?,
            event_id: uuid::Uuid::parse_str(&event.event_id).map_err(|_| {
                ValidationError::new("event_id", format!("{:?} is not a UUID", event.event_id))
            })?,
        },
        Event::OrderCreated(_) | Event::OrderStatusChanged(_) => Work::Nothing,
    })
}

impl OrderHandler {
    async fn handle_all(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: &[(&Event, &MessageContext)],
    ) -> Result<Vec<Vec<Event>>, HandleError> {
        let works = messages
            .iter()
            .map(|(event, _)| work_of(event))
            .collect::<Result<Vec<Work>, OrderError>>()?;
        let outcomes: Vec<&OrderOutcome> = works
            .iter()
            .filter_map(|work| match work {
                Work::Outcome(outcome) => Some(outcome),
                _ => None,
            })
            .collect();
        let mut caused = store::apply_all(tx, &outcomes, &self.transitions)
            .await?
            .into_iter();
        let entries: Vec<&CatalogueEntry> = works
            .iter()
            .filter_map(|work| match work {
                Work::Catalogue(entry) => Some(entry),
                _ => None,
            })
            .collect();
        if !entries.is_empty() {
            store::record_catalogues(tx, &entries).await?;
        }
        let mut results = Vec::with_capacity(works.len());
        for work in works {
            results.push(match work {
                Work::Outcome(_) => caused.next().expect("one result per outcome"),
                Work::Customer {
                    entry,
                    occurred_at,
                    event_id,
                } => {
                    store::record_customer(tx, &entry, occurred_at, event_id).await?;
                    Vec::new()
                }
                Work::Catalogue(_) | Work::Nothing => Vec::new(),
            });
        }
        Ok(results)
    }
}

#[async_trait]
impl Handler for OrderHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
        _ctx: &MessageContext,
    ) -> Result<Vec<Event>, HandleError> {
        match work_of(event)? {
            Work::Outcome(outcome) => Ok(store::apply(tx, &outcome, &self.transitions).await?),
            Work::Catalogue(entry) => {
                store::record_catalogue(tx, &entry).await?;
                Ok(Vec::new())
            }
            Work::Customer {
                entry,
                occurred_at,
                event_id,
            } => {
                store::record_customer(tx, &entry, occurred_at, event_id).await?;
                Ok(Vec::new())
            }
            Work::Nothing => Ok(Vec::new()),
        }
    }

    /// A batch's outcomes through [`store::apply_all`] (each order read once, the history
    /// rows and new statuses written in one statement) and its catalogue entries in one
    /// statement; customer entries one by one (rare). What each message caused, in order.
    async fn handle_together(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: &[(&Event, &MessageContext)],
    ) -> Option<Result<Vec<Vec<Event>>, HandleError>> {
        Some(self.handle_all(tx, messages).await)
    }

    /// Locks every order the batch moves at once, in order-id order: applied one after
    /// another, a batch would lock them in arrival order, and two instances (one consuming an
    /// order's `payments` partition, the other its `inventory` partition) could deadlock.
    async fn lock_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[&Event],
    ) -> Result<(), HandleError> {
        let orders: Vec<OrderId> = events
            .iter()
            .filter(|event| !matches!(event, Event::OrderCreated(_) | Event::OrderStatusChanged(_)))
            // An invalid id is refused when its event is handled.
            .filter_map(|event| OrderId::parse("order_id", event.order_id()?).ok())
            .collect();
        Ok(store::lock_orders(tx, &orders).await?)
    }
}
