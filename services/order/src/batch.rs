//! Calls served together. Concurrent callers wait in one queue; each of a few workers takes
//! everything waiting (up to a bound) and serves it in shared statements. There is no wait
//! for company: a lone call is served at once, and calls share statements only when they
//! arrived while the workers were busy, which is when sharing saves most (docs/performance.md,
//! sections 39, 41 and 42). The [`crate::Placer`] and the [`crate::HistoryReader`] are such
//! queues.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::OrderError;
use crate::metrics::BatchMetrics;

/// Statements in flight at once for each queue. Two, so a call arriving while one statement
/// commits is served at once by the other worker; a third would mostly split the batches.
pub const WORKERS: usize = 2;

/// Most calls served by one batch.
pub const MOST: usize = 64;

/// A call waiting in a queue: what it asks, and where its answer goes.
pub struct Call<Q, A> {
    pub asked: Q,
    answer: oneshot::Sender<Result<A, OrderError>>,
}

/// The sending end of a queue of calls asking `Q` and answered `A`.
pub type Queue<Q, A> = mpsc::Sender<Call<Q, A>>;

/// Starts [`WORKERS`] workers that take turns at the returned queue, each taking up to
/// [`MOST`] waiting calls at a time and handing them to `serve`, until every clone of the
/// queue is dropped. Each batch is counted in `metrics` under `name`.
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
                serve(std::mem::take(&mut batch)).await;
            }
        });
    }
    queue
}

/// Queues a call asking `asked` and waits for its answer; `workers` names the workers in the
/// error if they have stopped.
pub async fn call<Q, A>(queue: &Queue<Q, A>, workers: &str, asked: Q) -> Result<A, OrderError> {
    let (answer, answered) = oneshot::channel();
    let stopped = || OrderError::Internal(anyhow::anyhow!("the {workers} stopped"));
    queue
        .send(Call { asked, answer })
        .await
        .map_err(|_| stopped())?;
    answered.await.map_err(|_| stopped())?
}

/// Answers each call of `batch` with its answer in `together` (the batch served in shared
/// statements, an answer per call in the batch's order). If that failed and the batch held
/// more than one call, each call is served again alone by `alone`, all at once, so that a
/// call the database refuses fails only itself and every caller gets its own answer. A
/// caller that went away has nobody to answer; what its call did stands.
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
            for Call { asked, answer } in batch {
                let served = alone(asked);
                tokio::spawn(async move {
                    let _ = answer.send(served.await);
                });
            }
        }
    }
}
