//! The order service's own metrics: orders by status transition, how long an order took
//! from PlaceOrder to its end, and how many calls its queues serve together.

use orderflow_domain::OrderStatus;
use orderflow_platform::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    status: &'static str,
}

type Ends = Family<EndLabels, Histogram, fn() -> Histogram>;

/// 10 ms to about 5.5 minutes, doubling.
fn end_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// `orderflow_order_transitions_total{from, to}` and
/// `orderflow_order_time_to_end_seconds{status}`. Labels are static strings, so counting
/// allocates nothing.
#[derive(Clone)]
pub struct TransitionMetrics {
    transitions: Family<TransitionLabels, Counter>,
    ends: Ends,
}

impl Default for TransitionMetrics {
    fn default() -> Self {
        TransitionMetrics {
            transitions: Family::default(),
            ends: Family::new_with_constructor(end_buckets),
        }
    }
}

impl TransitionMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = TransitionMetrics::default();
        metrics.register(
            "order_transitions",
            "Order status changes, by previous and new status",
            m.transitions.clone(),
        );
        metrics.register_with_unit(
            "order_time_to_end",
            "Time from an order's placement to its final status (COMPLETED, FAILED, REFUNDED)",
            prometheus_client::registry::Unit::Seconds,
            m.ends.clone(),
        );
        m
    }

    /// Counts one status change, and for a final status the order's age in seconds. It is
    /// counted as the change is written, inside the consumer's transaction: in the rare case
    /// that transaction fails to commit and the event is retried, the change is counted
    /// again (the status history is the ledger).
    pub fn record(&self, from: OrderStatus, to: OrderStatus, age_secs: f64) {
        self.transitions
            .get_or_create(&TransitionLabels {
                from: from.as_str(),
                to: to.as_str(),
            })
            .inc();
        if to.is_terminal() {
            self.ends
                .get_or_create(&EndLabels {
                    status: to.as_str(),
                })
                .observe(age_secs.max(0.0));
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

/// `orderflow_order_batches_total{queue}` and `orderflow_order_batched_calls_total{queue}`:
/// the batches the workers of a queue (`placer`: the [`crate::Placer`], `history_reader`: the
/// [`crate::HistoryReader`]) took, each served by shared statements, and the calls in them.
/// Calls divided by batches is how many calls a statement served on average.
#[derive(Clone, Default)]
pub struct BatchMetrics {
    batches: Family<QueueLabels, Counter>,
    calls: Family<QueueLabels, Counter>,
}

impl BatchMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = BatchMetrics::default();
        metrics.register(
            "order_batches",
            "Batches of calls the order service's queues served with shared statements, by queue",
            m.batches.clone(),
        );
        metrics.register(
            "order_batched_calls",
            "Calls in the batches of the order service's queues, by queue",
            m.calls.clone(),
        );
        m
    }

    /// Counts one batch of `calls` calls taken from `queue`.
    pub fn taken(&self, queue: &'static str, calls: usize) {
        let labels = QueueLabels { queue };
        self.batches.get_or_create(&labels).inc();
        self.calls.get_or_create(&labels).inc_by(calls as u64);
    }

    /// The batches taken from `queue` so far, and the calls in them.
    pub fn counts(&self, queue: &'static str) -> (u64, u64) {
        let labels = QueueLabels { queue };
        (
            self.batches.get_or_create(&labels).get(),
            self.calls.get_or_create(&labels).get(),
        )
    }
}
