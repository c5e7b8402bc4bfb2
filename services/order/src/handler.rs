//! The order service's reaction to payment and inventory outcomes: each event becomes an
//! [`OrderOutcome`], which the store applies through the state machine (a batch's outcomes
//! together). Catalogue and customer directory entries update the read models PlaceOrder is
//! judged against.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orderflow_domain::{
    CatalogueEntry, CustomerEntry, OrderOutcome, PaymentOutcome, StockSettlement, ValidationError,
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

#[async_trait]
impl Handler for OrderHandler {
    /// The outcomes through `store::apply_all` (every order they move locked and read at
    /// once, in order-id order, so two instances whose batches share orders do not deadlock;
    /// the history rows and new statuses written in one statement) and the catalogue entries
    /// in one statement; customer entries one by one (rare). What each message caused, in
    /// order.
    async fn handle(
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
