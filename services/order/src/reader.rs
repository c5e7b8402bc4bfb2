//! GetOrderHistory's reads, shared: every WatchOrder begins with one, so they come as fast as
//! orders are placed. Concurrent reads wait in one queue ([`crate::batch`]); a reader takes
//! everything waiting (up to [`batch::MOST`]) and reads it in one statement
//! ([`Store::with_history_all`]).

use orderflow_domain::OrderId;

use crate::batch::{self, Call, Queue};
use crate::error::OrderError;
use crate::metrics::BatchMetrics;
use crate::store::{History, Store};

/// A read waiting: the order, and the version after which its changes are wanted.
struct ToRead {
    order_id: OrderId,
    after: i64,
}

/// The queue to the readers of orders and their histories. The readers stop once every clone
/// is dropped.
#[derive(Clone)]
pub struct HistoryReader {
    queue: Queue<ToRead, History>,
}

impl HistoryReader {
    /// Starts the readers of `store`; their batches are counted in `metrics` as the queue
    /// `history_reader`.
    pub fn start(store: Store, metrics: BatchMetrics) -> HistoryReader {
        let queue = batch::start("history_reader", metrics, move |batch| {
            let store = store.clone();
            async move { read_together(store, batch).await }
        });
        HistoryReader { queue }
    }

    /// The order and its changes after version `after`, as [`Store::with_history`] reads them,
    /// in a statement shared with the reads asked for at the same time.
    pub async fn read(&self, order_id: OrderId, after: i64) -> Result<History, OrderError> {
        let asked = ToRead { order_id, after };
        batch::call(&self.queue, "order history readers", asked).await
    }
}

/// Reads `batch` with [`Store::with_history_all`] and answers each caller; if the shared
/// statement fails, each is read again alone ([`batch::answer`]).
async fn read_together(store: Store, batch: Vec<Call<ToRead, History>>) {
    let asked: Vec<(OrderId, i64)> = batch
        .iter()
        .map(|call| (call.asked.order_id, call.asked.after))
        .collect();
    let together = store.with_history_all(&asked).await;
    batch::answer(batch, together, |ToRead { order_id, after }| {
        let store = store.clone();
        async move { store.with_history(order_id, after).await }
    });
}
