//! What the order service's integration tests share.

use orderflow_events::{Event, Topics};
use orderflow_order::{OrderHandler, TransitionMetrics};
use orderflow_platform::consumer::{Applied, BatchFailure, apply_committed};
use orderflow_platform::{MessageContext, OutboxSignal};
use sqlx::PgPool;

/// Applies `batch` with the order service's handler in a transaction of its own and commits
/// it, as the consumer loop does ([`apply_committed`]); what each message did.
pub async fn commit(
    pool: &PgPool,
    batch: &[(Event, MessageContext)],
) -> Result<Vec<Applied>, BatchFailure> {
    let handler = OrderHandler {
        transitions: TransitionMetrics::default(),
    };
    let signal = OutboxSignal::default();
    apply_committed(pool, "order", &Topics::default(), &handler, batch, &signal).await
}

/// Applies `events` as one batch ([`commit`]); the error, if the batch failed.
pub async fn apply(pool: &PgPool, events: Vec<Event>) -> Result<(), String> {
    let batch: Vec<(Event, MessageContext)> = events
        .into_iter()
        .map(|e| (e, MessageContext::replayed("test", 1)))
        .collect();
    commit(pool, &batch)
        .await
        .map(|_applied| ())
        .map_err(|failure| failure.to_string())
}
