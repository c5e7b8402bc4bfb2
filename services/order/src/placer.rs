//! PlaceOrder's reads and writes, shared. Concurrent PlaceOrders wait in one queue
//! ([`crate::batch`]); a writer takes everything waiting (up to [`batch::MOST`]), reads what
//! the store knows of those orders in one statement ([`Store::admission_all`]), refuses the
//! ones [`Admission::check`](crate::Admission::check) refuses and places the rest in one
//! statement, one commit ([`Store::place_all`]).

use orderflow_domain::NewOrder;
use orderflow_events::Topics;
use orderflow_platform::trace::TraceParent;

use crate::batch::{self, Call, Queue};
use crate::error::OrderError;
use crate::metrics::BatchMetrics;
use crate::store::{Placed, Store};

/// An order waiting to be placed, with the trace context of the call that placed it.
struct ToPlace {
    order: NewOrder,
    trace: TraceParent,
}

/// The queue to the writers of new orders. The writers stop once every clone is dropped.
#[derive(Clone)]
pub struct Placer {
    queue: Queue<ToPlace, Placed>,
}

impl Placer {
    /// Starts the writers, placing orders in `store` with their events for `topics`; their
    /// batches are counted in `metrics` as the queue `placer`.
    pub fn start(store: Store, topics: Topics, metrics: BatchMetrics) -> Placer {
        let queue = batch::start("placer", metrics, move |batch| {
            let (store, topics) = (store.clone(), topics.clone());
            async move { place_together(store, topics, batch).await }
        });
        Placer { queue }
    }

    /// Places `order` unless what the store knows of it refuses it ([`Store::admission`] and
    /// `Admission::check`), in statements shared with the orders placed at the same time; its
    /// events carry the current span's trace context.
    pub async fn place(&self, order: NewOrder) -> Result<Placed, OrderError> {
        let trace = TraceParent::current_or_new();
        batch::call(&self.queue, "order writers", ToPlace { order, trace }).await
    }
}

/// Places `batch` with [`admit_and_place_all`] and answers each caller; if a shared statement
/// fails, each order is read and placed again alone ([`batch::answer`]), so that one order
/// the database refuses fails only its own call. A caller that went away has nobody to
/// answer; its order stands, and a retry with its idempotency key gets it.
async fn place_together(store: Store, topics: Topics, batch: Vec<Call<ToPlace, Placed>>) {
    let together = admit_and_place_all(&store, &topics, &batch).await;
    batch::answer(batch, together, |ToPlace { order, trace }| {
        let (store, topics) = (store.clone(), topics.clone());
        async move { place_alone(&store, &topics, &order, &trace).await }
    });
}

/// The answer to each order of `batch`, in its order: one statement reads what the store
/// knows of them all, the pure [`Admission::check`](crate::Admission::check) refuses some,
/// and one statement places the others. A statement that fails is the batch's error.
async fn admit_and_place_all(
    store: &Store,
    topics: &Topics,
    batch: &[Call<ToPlace, Placed>],
) -> Result<Vec<Result<Placed, OrderError>>, OrderError> {
    let orders: Vec<&NewOrder> = batch.iter().map(|call| &call.asked.order).collect();
    let admissions = store.admission_all(&orders).await?;
    let mut answers: Vec<Option<Result<Placed, OrderError>>> = Vec::with_capacity(batch.len());
    let mut admitted = Vec::with_capacity(batch.len());
    for (call, admission) in batch.iter().zip(&admissions) {
        match admission.check(&call.asked.order) {
            Ok(()) => {
                admitted.push(answers.len());
                answers.push(None);
            }
            Err(refused) => answers.push(Some(Err(refused))),
        }
    }
    if !admitted.is_empty() {
        let to_place: Vec<(&NewOrder, &TraceParent)> = admitted
            .iter()
            .map(|&i| (&batch[i].asked.order, &batch[i].asked.trace))
            .collect();
        let placed = store.place_all(&to_place, topics).await?;
        for (&i, answer) in admitted.iter().zip(placed) {
            answers[i] = Some(answer);
        }
    }
    Ok(answers
        .into_iter()
        .map(|answer| answer.expect("every order answered"))
        .collect())
}

/// One order read and placed on its own: refused if its admission refuses it, else
/// [`Store::place`].
async fn place_alone(
    store: &Store,
    topics: &Topics,
    order: &NewOrder,
    trace: &TraceParent,
) -> Result<Placed, OrderError> {
    store.admission(order).await?.check(order)?;
    store.place(order, trace, topics).await
}
