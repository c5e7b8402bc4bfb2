//! PlaceOrder's writes, committed together. Concurrent PlaceOrders wait in one queue; a
//! writer takes everything waiting (up to [`MOST_ORDERS`]) and places it in one statement,
//! one commit ([`Store::place_all`]). There is no wait for company: a lone order is written
//! at once, and orders share a statement only when they arrived while the writers were busy,
//! which is when sharing saves most (docs/performance.md, section 39).

use std::sync::Arc;

use orderflow_domain::NewOrder;
use orderflow_events::Topics;
use orderflow_platform::trace::TraceParent;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::OrderError;
use crate::store::{Placed, Store};

/// Most orders placed in one statement.
pub const MOST_ORDERS: usize = 64;

/// Statements in flight at once. Two, so an order arriving while one statement commits is
/// written at once by the other; a third would mostly split the batches.
pub const WRITERS: usize = 2;

/// An order waiting to be placed, with the trace context of the call that placed it and
/// where its answer goes.
struct Request {
    order: NewOrder,
    trace: TraceParent,
    answer: oneshot::Sender<Result<Placed, OrderError>>,
}

/// The queue to the writers of new orders. The writers stop once every clone is dropped.
#[derive(Clone)]
pub struct Placer {
    queue: mpsc::Sender<Request>,
}

impl Placer {
    /// Starts the writers, placing orders in `store` with their events for `topics`.
    pub fn start(store: Store, topics: Topics) -> Placer {
        let (queue, requests) = mpsc::channel(MOST_ORDERS * 16);
        let requests = Arc::new(Mutex::new(requests));
        for _ in 0..WRITERS {
            tokio::spawn(write(store.clone(), topics.clone(), requests.clone()));
        }
        Placer { queue }
    }

    /// Places `order` as [`Store::place`] does, in a statement shared with the orders
    /// placed at the same time; its events carry the current span's trace context.
    pub async fn place(&self, order: NewOrder) -> Result<Placed, OrderError> {
        let (answer, answered) = oneshot::channel();
        let request = Request {
            order,
            trace: TraceParent::current_or_new(),
            answer,
        };
        let stopped = || OrderError::Internal(anyhow::anyhow!("the order writers stopped"));
        self.queue.send(request).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// One writer: takes what waits in `requests` (the writers take turns at the queue) and
/// places it, until the queue closes.
async fn write(store: Store, topics: Topics, requests: Arc<Mutex<mpsc::Receiver<Request>>>) {
    let mut batch = Vec::with_capacity(MOST_ORDERS);
    loop {
        let taken = requests
            .lock()
            .await
            .recv_many(&mut batch, MOST_ORDERS)
            .await;
        if taken == 0 {
            return;
        }
        place_together(&store, &topics, std::mem::take(&mut batch)).await;
    }
}

/// Places `batch` in one statement and answers each caller. If the statement fails and held
/// more than one order, each is placed again alone, all at once, so that one order the
/// database refuses fails only its own call and every caller gets its own answer.
async fn place_together(store: &Store, topics: &Topics, batch: Vec<Request>) {
    let orders: Vec<(&NewOrder, &TraceParent)> = batch
        .iter()
        .map(|request| (&request.order, &request.trace))
        .collect();
    let placed = store.place_all(&orders, topics).await;
    drop(orders); // it borrows `batch`, which the answers take apart
    match placed {
        Ok(answers) => {
            for (request, answer) in batch.into_iter().zip(answers) {
                // A caller that went away has nobody to answer; its order stands, and a retry
                // with its idempotency key gets it.
                let _ = request.answer.send(answer);
            }
        }
        Err(e) if batch.len() == 1 => {
            let request = batch.into_iter().next().expect("one request");
            let _ = request.answer.send(Err(e));
        }
        Err(e) => {
            tracing::warn!(error = %e, orders = batch.len(), "placing orders together failed; placing each alone");
            for request in batch {
                let (store, topics) = (store.clone(), topics.clone());
                tokio::spawn(async move {
                    let answer = store.place(&request.order, &request.trace, &topics).await;
                    let _ = request.answer.send(answer);
                });
            }
        }
    }
}
