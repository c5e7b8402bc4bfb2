//! GetOrderHistory's reads, shared: every WatchOrder begins with one, so they come as fast as
//! orders are placed. Concurrent reads wait in one queue ([`crate::batch`]); a reader takes
//! everything waiting (up to [`MOST_READS`]) and reads it in one statement
//! ([`Store::with_history_all`]).

use orderflow_domain::OrderId;
use tokio::sync::{mpsc, oneshot};

use crate::batch;
use crate::error::OrderError;
use crate::metrics::BatchMetrics;
use crate::store::{History, Store};

/// Most orders read in one statement.
pub const MOST_READS: usize = 64;

/// Statements in flight at once, as the placer's writers and for the same reason.
pub const READERS: usize = 2;

/// A read waiting: the order, the version after which its changes are wanted, and where the
/// answer goes.
struct Request {
    order_id: OrderId,
    after: i64,
    answer: oneshot::Sender<Result<History, OrderError>>,
}

/// The queue to the readers of orders and their histories. The readers stop once every clone
/// is dropped.
#[derive(Clone)]
pub struct HistoryReader {
    queue: mpsc::Sender<Request>,
}

impl HistoryReader {
    /// Starts the readers of `store`; their batches are counted in `metrics` as the queue
    /// `history_reader`.
    pub fn start(store: Store, metrics: BatchMetrics) -> HistoryReader {
        let queue = batch::start(
            "history_reader",
            metrics,
            READERS,
            MOST_READS,
            move |batch| {
                let store = store.clone();
                async move { read_together(&store, batch).await }
            },
        );
        HistoryReader { queue }
    }

    /// The order and its changes after version `after`, as [`Store::with_history`] reads them,
    /// in a statement shared with the reads asked for at the same time.
    pub async fn read(&self, order_id: OrderId, after: i64) -> Result<History, OrderError> {
        batch::call(&self.queue, "order history readers", |answer| Request {
            order_id,
            after,
            answer,
        })
        .await
    }
}

/// Reads `batch` with [`Store::with_history_all`] and answers each caller. If the shared
/// statement fails and held more than one read, each is read again alone, all at once, so that
/// every caller gets its own answer.
async fn read_together(store: &Store, batch: Vec<Request>) {
    let asked: Vec<(OrderId, i64)> = batch.iter().map(|r| (r.order_id, r.after)).collect();
    match store.with_history_all(&asked).await {
        Ok(answers) => {
            for (request, answer) in batch.into_iter().zip(answers) {
                let _ = request.answer.send(answer);
            }
        }
        Err(e) if batch.len() == 1 => {
            let request = batch.into_iter().next().expect("one request");
            let _ = request.answer.send(Err(e));
        }
        Err(e) => {
            tracing::warn!(error = %e, orders = batch.len(), "reading histories together failed; reading each alone");
            for request in batch {
                let store = store.clone();
                tokio::spawn(async move {
                    let answer = store.with_history(request.order_id, request.after).await;
                    let _ = request.answer.send(answer);
                });
            }
        }
    }
}
