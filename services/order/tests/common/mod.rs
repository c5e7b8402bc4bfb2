//! What the order service's integration tests share.

use orderflow_events::{Event, Topics};
use orderflow_order::{OrderHandler, TransitionMetrics};
use orderflow_platform::consumer::apply_committed;
use orderflow_platform::{MessageContext, OutboxSignal};
use sqlx::PgPool;

/// Applies `events` as one batch in a transaction of its own and commits it, as the consumer
/// loop does ([`apply_committed`]); the error, if the batch failed.
pub async fn apply(pool: &PgPool, events: Vec<Event>) -> Result<(), String> {
    let handler = OrderHandler {
        transitions: TransitionMetrics::default(),
    };
    let batch: Vec<(Event, MessageContext)> = events
        .into_iter()
        .map(|e| (e, MessageContext::replayed("test", 1)))
        .collect();
    let signal = OutboxSignal::default();
    apply_committed(pool, "order", &Topics::default(), &handler, &batch, &signal)
        .await
        .map(|_applied| ())
        .map_err(|failure| failure.to_string())
}
