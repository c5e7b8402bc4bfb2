//! The order service's own metric: orders by status transition.

use orderflow_domain::OrderStatus;
use orderflow_platform::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
}

/// `orderflow_order_transitions_total{from, to}`. Labels are static strings, so counting
/// allocates nothing.
#[derive(Clone, Default)]
pub struct TransitionMetrics(Family<TransitionLabels, Counter>);

impl TransitionMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let transitions = TransitionMetrics::default();
        metrics.register(
            "order_transitions",
            "Order status changes, by previous and new status",
            transitions.0.clone(),
        );
        transitions
    }

    /// Counts one status change. It is counted as the change is written, inside the
    /// consumer's transaction: in the rare case that transaction fails to commit and the
    /// event is retried, the change is counted again (the status history is the ledger).
    pub fn record(&self, from: OrderStatus, to: OrderStatus) {
        self.0
            .get_or_create(&TransitionLabels {
                from: from.as_str(),
                to: to.as_str(),
            })
            .inc();
    }
}
