//! Calls served together. Concurrent callers wait in one queue; each of a few workers takes
//! everything waiting (up to a bound) and serves it in shared statements. There is no wait
//! for company: a lone call is served at once, and calls share statements only when they
//! arrived while the workers were busy, which is when sharing saves most (docs/performance.md,
//! sections 39, 41 and 42). The [`crate::Placer`] and the [`crate::HistoryReader`] are such
//! queues.
//!
//! A batch is served in its own span, `batch` (with the queue's name and how many calls it
//! serves), so its statements' spans are not lost to the callers' traces although a worker,
//! not the caller, runs them: the span is a child of the first call's span (a lone call, the
//! usual case below saturation, keeps its statements in its own trace, as before calls were
//! shared) and follows from each other call's span (a link, in OpenTelemetry's terms, from the
//! shared statements to every call they served). A call served again alone is served in its
//! caller's span.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::{Instrument, Span};

use crate::error::OrderError;
use crate::metrics::BatchMetrics;

/// Statements in flight at once for each queue. Two, so a call arriving while one statement
/// commits is served at once by the other worker; a third would mostly split the batches.
pub const WORKERS: usize = 2;

/// Most calls served by one batch.
pub const MOST: usize = 64;

/// A call waiting in a queue: what it asks, where its answer goes, and the caller's span.
pub struct Call<Q, A> {
    pub asked: Q,
    answer: oneshot::Sender<Result<A, OrderError>>,
    caller: Span,
}

/// The sending end of a queue of calls asking `Q` and answered `A`.
pub type Queue<Q, A> = mpsc::Sender<Call<Q, A>>;

/// Starts [`WORKERS`] workers that take turns at the returned queue, each taking up to
/// [`MOST`] waiting calls at a time and handing them to `serve`, until every clone of the
/// queue is dropped. Each batch is counted in `metrics` under `name`, and served in a span
/// linked to its calls' spans (`batch_span`).
pub fn start<Q, A, S, F>(name: &'static str, metrics: BatchMetrics, serve: S) -> Queue<Q, A>
where
    Q: Send + 'static,
    A: Send + 'static,
    S: Fn(Vec<Call<Q, A>>) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let (queue, calls) = mpsc::channel(MOST * 16);
    let calls = Arc::new(Mutex::new(calls));
    for _ in 0..WORKERS {
        let (calls, serve, metrics) = (calls.clone(), serve.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MOST);
            loop {
                let taken = calls.lock().await.recv_many(&mut batch, MOST).await;
                if taken == 0 {
                    return;
                }
                metrics.taken(name, taken);
                let span = batch_span(name, &batch);
                serve(std::mem::take(&mut batch)).instrument(span).await;
            }
        });
    }
    queue
}

/// The span a batch is served in: `batch`, naming the queue and how many calls it serves, the
/// child of the first call's span and following from every other's.
fn batch_span<Q, A>(queue: &'static str, batch: &[Call<Q, A>]) -> Span {
    let first = batch.first().and_then(|call| call.caller.id());
    let span = tracing::info_span!(parent: first, "batch", queue, calls = batch.len());
    for call in batch.iter().skip(1) {
        span.follows_from(&call.caller);
    }
    span
}

/// Queues a call asking `asked` and waits for its answer; `workers` names the workers in the
/// error if they have stopped. The call is linked to the current span (see the module's doc).
pub async fn call<Q, A>(queue: &Queue<Q, A>, workers: &str, asked: Q) -> Result<A, OrderError> {
    let (answer, answered) = oneshot::channel();
    let stopped = || OrderError::Internal(anyhow::anyhow!("the {workers} stopped"));
    queue
        .send(Call {
            asked,
            answer,
            caller: Span::current(),
        })
        .await
        .map_err(|_| stopped())?;
    answered.await.map_err(|_| stopped())?
}

/// Answers each call of `batch` with its answer in `together` (the batch served in shared
/// statements, an answer per call in the batch's order). If that failed and the batch held
/// more than one call, each call is served again alone by `alone`, all at once and each in
/// its caller's span, so that a call the database refuses fails only itself and every caller
/// gets its own answer. A caller that went away has nobody to answer; what its call did
/// stands.
pub fn answer<Q, A, L, F>(
    batch: Vec<Call<Q, A>>,
    together: Result<Vec<Result<A, OrderError>>, OrderError>,
    alone: L,
) where
    L: Fn(Q) -> F,
    F: Future<Output = Result<A, OrderError>> + Send + 'static,
    A: Send + 'static,
{
    match together {
        Ok(answers) => {
            for (call, answer) in batch.into_iter().zip(answers) {
                let _ = call.answer.send(answer);
            }
        }
        Err(e) if batch.len() == 1 => {
            let call = batch.into_iter().next().expect("one call");
            let _ = call.answer.send(Err(e));
        }
        Err(e) => {
            tracing::warn!(error = %e, calls = batch.len(), "serving calls together failed; serving each alone");
            for Call {
                asked,
                answer,
                caller,
            } in batch
            {
                let served = alone(asked);
                tokio::spawn(
                    async move {
                        let _ = answer.send(served.await);
                    }
                    .instrument(caller),
                );
            }
        }
    }
}
